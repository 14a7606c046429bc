from hybridsgd.cli import entry

entry()
