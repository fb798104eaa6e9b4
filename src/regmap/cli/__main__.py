import sys

from regmap.cli import main

sys.exit(main())
