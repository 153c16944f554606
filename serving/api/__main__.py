"""``python -m serving.api``: see :mod:`serving.api.main`."""
from serving.api.main import main

if __name__ == "__main__":
    main()
