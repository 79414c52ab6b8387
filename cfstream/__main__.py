from cfstream.cli import main

main()
