from virnucpro.cli import main

raise SystemExit(main())
