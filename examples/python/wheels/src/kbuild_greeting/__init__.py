"""A tiny package, vendored as a wheel to show kbuild's python buildpack
installing requirements.txt without pip or a network."""

__version__ = "1.0.0"


def greeting(name="kbuild"):
    """The greeting the example app shows."""
    return "greetings from the kbuild_greeting %s wheel, %s" % (__version__, name)


def main():
    print(greeting())
    return 0
