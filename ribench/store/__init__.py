"""The store: results of cells in one SQLite file, and the weights derived cells reuse beside it."""

from ribench.store.database import Store
from ribench.store.keys import canonical_json, cell_key
from ribench.store.location import default_store_path, weights_dir_of
from ribench.store.records import CellRecord

__all__ = ["CellRecord", "Store", "canonical_json", "cell_key", "default_store_path", "weights_dir_of"]
