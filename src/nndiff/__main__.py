import sys

from nndiff.cli.main import main

sys.exit(main())
