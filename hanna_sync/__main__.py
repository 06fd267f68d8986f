from hanna_sync.cli import main

main()
