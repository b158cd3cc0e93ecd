import sys

from core.checkpoints.cli import main

sys.exit(main())
