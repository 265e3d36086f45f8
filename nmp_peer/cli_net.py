"""Transitional: ``python -m nmp_peer.cli_net ARGS`` runs ``python -m nmp_peer.cli ARGS``.

The commands this module held are in the ``nmp_peer.cli`` package (``impair`` and
``scenarios`` in ``nmp_peer.cli.net``). ``nmp_peer/scenarios/backends/netns.py`` still
starts its relay with ``-m nmp_peer.cli_net``; once it says ``-m nmp_peer.cli``, delete
this file. It imports nothing unless run.
"""

if __name__ == "__main__":
    import sys

    from nmp_peer.cli import main

    sys.exit(main())
