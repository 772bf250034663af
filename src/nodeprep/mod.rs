//! Node preparation as pure builders of remote commands and files: swap, modules, sysctls, scratch disk, packages, hardware labels.
