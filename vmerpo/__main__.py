import sys

from vmerpo.cli import main

sys.exit(main())
