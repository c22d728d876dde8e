# Inputs of packer/kubeseed.pkr.hcl. example.pkrvars.hcl shows a complete set.

variable "image_version" {
  type        = string
  description = "Written to /etc/kubeseed/image-version and used in the image names, e.g. 0.1.0."
}

variable "region" {
  type        = string
  description = "AWS region the AMI is built in."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "EC2 instance type of the build machine."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet of the build machine; empty means the region's default VPC."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "KMS key that encrypts the AMI's root volume; empty means the account's default EBS key."
}

variable "volume_size_gb" {
  type        = number
  default     = 8
  description = "Root volume size of the AMI, in GiB."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for the AMI and its snapshot (Project, Owner, ...)."
}

variable "debian_cloud_image_url" {
  type        = string
  description = "Debian 13 (trixie) genericcloud qcow2 the qemu source starts from."
}

variable "debian_cloud_image_checksum" {
  type        = string
  description = "Its checksum, as Packer takes it: sha512:HEX, or file:URL of Debian's SHA512SUMS."
}

variable "qemu_accelerator" {
  type        = string
  default     = "tcg"
  description = "tcg works everywhere (slow); kvm where /dev/kvm works."
}

variable "qemu_disk_size" {
  type        = string
  default     = "4G"
  description = "Size of the qcow2 the qemu source writes."
}

variable "qemu_build_password" {
  type        = string
  default     = "kubeseed-build"
  description = "Password of the temporary 'packer' user of qemu builds; must match qemu-seed/user-data. The user is deleted at the end of the build."
}
