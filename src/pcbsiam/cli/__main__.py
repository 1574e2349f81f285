"""``python -m pcbsiam.cli`` (what ``torchrun -m pcbsiam.cli`` runs)."""

import sys

from pcbsiam.cli.main import main

sys.exit(main())
