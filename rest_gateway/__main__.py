from rest_gateway.server import main

main()
