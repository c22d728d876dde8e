# Example inputs: `packer build -var-file=packer/example.pkrvars.hcl packer/` (and what `packer validate` is tested with).
image_version = "0.1.0"
region        = "eu-west-1"
instance_type = "t3.small"
subnet_id     = "subnet-0123456789abcdef0"
tags = {
  Project = "kubeseed"
  Owner   = "platform"
}
debian_cloud_image_url      = "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2"
debian_cloud_image_checksum = "file:https://cloud.debian.org/images/cloud/trixie/latest/SHA512SUMS"
