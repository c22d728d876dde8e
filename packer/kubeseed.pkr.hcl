# The kubeseed golden image: one provision step (image/provision) on two sources.
#   amazon-ebs.debian  an AMI from Debian 13 (trixie)'s official AMI (encrypted root volume, IMDSv2 only)
#   qemu.debian        a qcow2 from Debian 13 (trixie)'s genericcloud image
# `packer build -var-file=packer/example.pkrvars.hcl packer/`  (-only=qemu.debian for the qcow2 alone)
# Needs `npm run build` first: the agent bundle dist/agent.js is uploaded as it is.

locals {
  name = "kubeseed-${var.image_version}-${formatdate("YYYYMMDDhhmm", timestamp())}"
  tags = merge(var.tags, {
    Name          = local.name
    ImageVersion  = var.image_version
    BaseImage     = "debian-13"
    BuiltBy       = "packer"
  })
  repo = "${path.root}/.."
}

source "amazon-ebs" "debian" {
  region        = var.region
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  source_ami_filter {
    filters = {
      name                = "debian-13-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    # Debian's own AWS account: only official Debian AMIs match.
    owners      = ["136693071363"]
    most_recent = true
  }
  ssh_username = "admin"

  ami_name        = local.name
  ami_description = "kubeseed ${var.image_version}: Kubernetes node image (Debian 13)"
  encrypt_boot    = true
  kms_key_id      = var.kms_key_id
  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.volume_size_gb
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
    encrypted             = true
  }
  # The build machine itself answers metadata only with IMDSv2 session tokens, one hop away.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  tags          = local.tags
  snapshot_tags = local.tags
  run_tags      = merge(local.tags, { Name = "${local.name}-build" })
}

source "qemu" "debian" {
  iso_url      = var.debian_cloud_image_url
  iso_checksum = var.debian_cloud_image_checksum
  disk_image   = true
  disk_size    = var.qemu_disk_size
  format       = "qcow2"
  accelerator  = var.qemu_accelerator
  disable_vnc  = true
  headless     = true
  memory       = 1024
  cpus         = 2
  net_device     = "virtio-net"
  disk_interface = "virtio"
  output_directory = "${local.repo}/out/packer-qemu"
  vm_name          = "${local.name}.qcow2"
  # The genericcloud image has no password and no keys: cloud-init's NoCloud seed (served by Packer's HTTP
  # server, named on the SMBIOS serial) makes the temporary 'packer' user this build logs in with.
  http_directory = "${path.root}/qemu-seed"
  qemuargs = [
    ["-smbios", "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/"],
  ]
  ssh_username     = "packer"
  ssh_password     = var.qemu_build_password
  ssh_timeout      = "20m"
  shutdown_command = "sudo shutdown -P now"
}

build {
  sources = ["source.amazon-ebs.debian", "source.qemu.debian"]

  # provision expects the repository layout: image/, units/, dist/agent.js.
  provisioner "shell" {
    inline = ["rm -rf /tmp/kubeseed", "mkdir -p /tmp/kubeseed/dist"]
  }
  provisioner "file" {
    source      = "${local.repo}/image"
    destination = "/tmp/kubeseed"
  }
  provisioner "file" {
    source      = "${local.repo}/units"
    destination = "/tmp/kubeseed"
  }
  provisioner "file" {
    source      = "${local.repo}/dist/agent.js"
    destination = "/tmp/kubeseed/dist/agent.js"
  }
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} sh {{ .Path }}"
    inline = [
      "chmod +x /tmp/kubeseed/image/provision /tmp/kubeseed/image/hygiene-check",
      "/tmp/kubeseed/image/provision --image-version ${local.name}",
    ]
  }
  # Last, as root already: drop what only this build needed (the qemu build's login user, cloud-init's
  # per-instance sudo and sshd password settings, remade at each machine's first boot), then clean and check
  # again, since the build kept logging after the provision step.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} sh {{ .Path }}"
    inline = [
      "set -e",
      "rm -f /etc/sudoers.d/90-cloud-init-users /etc/ssh/sshd_config.d/50-cloud-init.conf",
      "if id packer >/dev/null 2>&1; then userdel --force --remove packer; fi",
      "/tmp/kubeseed/image/provision hygiene",
      "/tmp/kubeseed/image/provision check",
      "rm -rf /tmp/kubeseed",
    ]
  }

  post-processor "manifest" {
    output     = "${local.repo}/out/packer-manifest.json"
    strip_path = true
    custom_data = {
      image_version = var.image_version
    }
  }
}
