"""mailgate: an email-integrated ticket gateway for internal service desks."""

__version__ = "0.1.0"
