"""`python -m agent.lab.vppsim`."""

from agent.lab.vppsim.main import main

raise SystemExit(main())
