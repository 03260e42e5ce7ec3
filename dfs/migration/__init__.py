"""The migration coordinator: live-migrate guests whose disks are on vmstore.

Only this package imports libvirt (libvirt-python, the ``migration`` extra).
"""
