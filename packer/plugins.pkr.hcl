# Packer >= 1.7 installs these with `packer init packer/`. Kept alone because Debian's packer 1.6.6 (which
# has both builders built in) rejects a `packer` block with required_plugins: validate with 1.6.6 without it.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.0"
    }
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.0.0"
    }
  }
}
