from riffradio.cli import main

raise SystemExit(main())
