"""GSM/LTE modems over AT commands: PDU codec, AT engine, serial driver, bank, emulator."""
