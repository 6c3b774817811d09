from riffradio.app.cli import main

raise SystemExit(main())
