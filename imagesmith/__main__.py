from imagesmith.quick import main

main()
