from rerank.gateway.stack import main

raise SystemExit(main())
