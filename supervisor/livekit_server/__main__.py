"""`python -m supervisor.livekit_server ensure`: the Makefile's way to have the binary."""

import sys

from supervisor.livekit_server.server import main

sys.exit(main())
