from mailgate.cli.main import main

if __name__ == "__main__":  # not when a reading process (intake/reading.py) imports it
    raise SystemExit(main())
