from ribench.cli.main import entry

entry()
