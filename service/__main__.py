from rerank.service.main import main

raise SystemExit(main())
