"""`python3 -m proxy`: run the proxy (settings from PW_* environment variables)."""

import sys

from proxy.main import main

sys.exit(main())
