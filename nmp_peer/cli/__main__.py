"""``python -m nmp_peer.cli``: the ``nmp-peer`` command."""

import sys

from nmp_peer.cli import main

sys.exit(main())
