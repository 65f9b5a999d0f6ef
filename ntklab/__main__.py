from ntklab.cli import main

main()
