from operations import main

main()
