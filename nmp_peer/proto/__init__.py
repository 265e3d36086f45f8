"""The wire protocol: packet format, codecs, authentication. Sans-IO and clock-free."""
