"""``python -m astrid_assets.cli …``: the ``astrid`` command."""

import sys

from astrid_assets.cli.commands import main

sys.exit(main())
