import sys

from hybridsgd.cli import main

sys.exit(main())
