from cfstream.main import main

main()
