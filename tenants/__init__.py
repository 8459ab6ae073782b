"""Twilio accounts per business: registration, encrypted secrets, which account a
webhook or a request belongs to, ownership of SIDs, and the account-wide request cap."""
