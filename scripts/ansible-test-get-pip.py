"""Offline stand-in for the get-pip.py that ansible-test downloads.

ansible-test (via quiet_pip.py) runs this as __main__ with pip options and
packages (e.g. ``--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel``)
in a fresh virtualenv that has no pip. The real script comes from a host this
machine cannot reach; install-deps.sh copies this file into
~/.ansible/test/cache/get_pip_<version>.py, where ansible-test looks first.
"""
import subprocess
import sys

# ensurepip must run in a subprocess: run in-process it sets
# PIP_CONFIG_FILE=/dev/null, which hides the machine's pip configuration
# (index, certificate) from the install below and makes it fail with SSL errors.
subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade'], check=True,
               stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install'] + args, check=False).returncode)
