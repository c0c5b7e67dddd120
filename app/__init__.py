"""OCTI phone line: a telephony voice agent for poultry farmers."""
