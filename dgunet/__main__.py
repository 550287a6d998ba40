from dgunet.cli import main

raise SystemExit(main())
