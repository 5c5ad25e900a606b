from vudsync.cli import main

main()
