#!/usr/bin/env bash
# The whole rib-mini rerun of issue 15, resumable (a rerun skips every stored cell): the selection
# (ribench tune: 5+ values x 3 datasets x seed 0 per method and pretrain; it writes your selections
# file, which takes precedence over the shipped one), then every method under the tuned protocol on
# both pretrains, and ImageNet-RIB's slide methods under the reference protocol; 3 seeds x 7
# downstream datasets each. Options after STORE go to every
# `ribench grid` (e.g. --executor ray --cpus-per-cell 1). To resume from the cells already published,
# start STORE from the archive first: gunzip -c docs/results/cells.sqlite.gz > STORE (archive.sh keeps it).
set -euo pipefail
store=${1:?usage: rerun.sh STORE [grid options]}
shift
common="zeroshot,ft,lp,lora,saft,digrap,l2sp,ewc,ewc-rib,lwf,lpft,vpt,imp-reg,imp-select,auto-rgn,auto-rgn-hessian,auto-rgn-change,surprise,surprise-diff,criticality-identity,criticality-random,wiseft,soup"
trained="ft,lp,lora,saft,digrap,l2sp,ewc,ewc-rib,lwf,lpft,vpt,imp-reg,imp-select,auto-rgn,auto-rgn-hessian,auto-rgn-change,surprise,surprise-diff,criticality-identity,criticality-random"
ribench tune --pretrains mini-clip --store "$store" --methods "$trained,flyp" "$@"
ribench tune --pretrains mini-sup --store "$store" --methods "$trained" "$@"
ribench grid --protocol tuned --pretrains mini-clip --seeds 0,1,2 --store "$store" --methods "$common,flyp" "$@"
ribench grid --protocol tuned --pretrains mini-sup --seeds 0,1,2 --store "$store" --methods "$common" "$@"
ribench grid --protocol reference --pretrains mini-clip,mini-sup --seeds 0,1,2 --store "$store" \
  --methods "zeroshot,ft,lp,lora,vpt,ewc,ewc-rib,lwf,lpft,wiseft,soup,soup[ingredients=pretrained,ft,ewc-rib,lwf]" "$@"
