import sys

from recops.cli import main

sys.exit(main())
