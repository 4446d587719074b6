from segdeck.cli import main

raise SystemExit(main())
