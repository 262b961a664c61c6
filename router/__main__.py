"""`python -m router [flags]`"""

from router.server import main

if __name__ == "__main__":
    main()
