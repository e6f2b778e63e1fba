from gateway.stack import main

raise SystemExit(main())
