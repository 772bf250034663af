"""Drives a Proxmox VE API with proxmoxer, as a user's script would: a GPU VM from create to delete.

Run by tests/it/third_party.rs against `provision sim serve`; it runs unchanged against a real
Proxmox VE 9 node with a free passthrough GPU (set the variables below). Every step checks what
Proxmox answers, and any surprise exits non-zero with the reason on stderr.

Environment: PVE_HOST, PVE_PORT, PVE_NODE, PVE_TOKEN_USER (user@realm), PVE_TOKEN_NAME,
PVE_TOKEN_SECRET, PVE_ROOT_PASSWORD, PVE_GPU (a PCI function, 0000:c1:00.0).
"""

import os
import sys
import time

from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

HOST = os.environ["PVE_HOST"]
PORT = int(os.environ["PVE_PORT"])
NODE = os.environ["PVE_NODE"]
GPU = os.environ["PVE_GPU"]
MAPPING = "provision-clients-gpu"


def check(condition, what):
    if not condition:
        sys.exit(f"proxmoxer_gpu_vm: {what}")


def wait(api, upid, what):
    status = Tasks.blocking_status(api, upid, timeout=120, polling_interval=0.05)
    check(status is not None, f"{what}: task {upid} did not finish")
    check(status["status"] == "stopped", f"{what}: task status {status}")
    check(status.get("exitstatus") == "OK", f"{what}: task failed: {status}")
    log = api.nodes(NODE).tasks(upid).log.get(limit=50)
    check(log and log[-1]["t"] == "TASK OK", f"{what}: task log ends {log[-1:]}")


def vm_status(api, vmid):
    return api.nodes(NODE).qemu(vmid).status.current.get()["status"]


# root@pam with a password: ticket, cookie and CSRF header (proxmoxer's PVEAuthCookie path).
root = ProxmoxAPI(
    HOST, port=PORT, user="root@pam", password=os.environ["PVE_ROOT_PASSWORD"],
    verify_ssl=False, timeout=30,
)
# An API token for the VM itself, as automation usually runs.
api = ProxmoxAPI(
    HOST, port=PORT, user=os.environ["PVE_TOKEN_USER"],
    token_name=os.environ["PVE_TOKEN_NAME"], token_value=os.environ["PVE_TOKEN_SECRET"],
    verify_ssl=False, timeout=30,
)

version = api.version.get()
check(version["version"].startswith("9."), f"version {version}")
check(any(n["node"] == NODE and n["status"] == "online" for n in api.nodes.get()),
      f"node {NODE} not online")

# The GPU, and a cluster resource mapping for it (root creates it; the token only uses it).
devices = {d["id"]: d for d in api.nodes(NODE).hardware.pci.get(**{"pci-class-blacklist": ""})}
check(GPU in devices, f"{GPU} not among {sorted(devices)}")
device = devices[GPU]
device_id = f"{device['vendor'][2:]}:{device['device'][2:]}"
entry = f"id={device_id},iommugroup={device['iommugroup']},node={NODE},path={GPU}"
if "subsystem_vendor" in device:
    entry += f",subsystem-id={device['subsystem_vendor'][2:]}:{device['subsystem_device'][2:]}"
root.cluster.mapping.pci.post(id=MAPPING, map=[entry], description="proxmoxer test")
mapping = root.cluster.mapping.pci(MAPPING).get()
check(mapping["map"] == [entry] or mapping["map"] == entry, f"mapping {mapping}")

vmid = int(api.cluster.nextid.get())
upid = api.nodes(NODE).qemu.post(
    vmid=vmid,
    name="proxmoxer-gpu",
    machine="q35",
    bios="ovmf",
    efidisk0="local-lvm:1,efitype=4m,pre-enrolled-keys=1",
    hostpci0=f"mapping={MAPPING},pcie=1",
    cpu="host",
    cores=4,
    memory=8192,
    scsihw="virtio-scsi-single",
    scsi0="local-lvm:16,iothread=1,discard=on",
    net0="virtio,bridge=vmbr0",
    ide2="local-lvm:cloudinit",
    ciuser="ops",
    ipconfig0="ip=dhcp",
    agent=1,
    onboot=0,
    tags="gpu;proxmoxer",
)
wait(api, upid, "create")

config = api.nodes(NODE).qemu(vmid).config.get()
check(config["machine"] == "q35", f"machine {config}")
check(config["bios"] == "ovmf", f"bios {config}")
check(config["efidisk0"].startswith(f"local-lvm:vm-{vmid}-disk-"), f"efidisk0 {config}")
check("efitype=4m" in config["efidisk0"], f"efidisk0 {config}")
check(config["hostpci0"] == f"mapping={MAPPING},pcie=1", f"hostpci0 {config}")
check(config["scsi0"].startswith(f"local-lvm:vm-{vmid}-disk-"), f"scsi0 {config}")
check("size=16G" in config["scsi0"], f"scsi0 {config}")
check(config["net0"].startswith("virtio="), f"net0 {config}")
check(config["ide2"] == f"local-lvm:vm-{vmid}-cloudinit,media=cdrom", f"ide2 {config}")
check(sorted(config["tags"].split(";")) == ["gpu", "proxmoxer"], f"tags {config}")
check(int(config["memory"]) == 8192 and config["cores"] == 4, f"size {config}")
check("lock" not in config, f"still locked {config}")
check(vm_status(api, vmid) == "stopped", "new VM not stopped")

listed = [r for r in api.cluster.resources.get(type="vm") if r.get("vmid") == vmid]
check(len(listed) == 1 and listed[0]["node"] == NODE and listed[0]["status"] == "stopped",
      f"cluster resources {listed}")

wait(api, api.nodes(NODE).qemu(vmid).status.start.post(), "start")
check(vm_status(api, vmid) == "running", "VM not running after start")
check(any(r["vmid"] == vmid and r["status"] == "running"
          for r in api.nodes(NODE).qemu.get()), "qemu list does not show it running")

wait(api, api.nodes(NODE).qemu(vmid).status.stop.post(), "stop")
check(vm_status(api, vmid) == "stopped", "VM not stopped after stop")

wait(api, api.nodes(NODE).qemu(vmid).delete(purge=1, **{"destroy-unreferenced-disks": 1}),
     "delete")
try:
    api.nodes(NODE).qemu(vmid).config.get()
    sys.exit("proxmoxer_gpu_vm: config of the deleted VM still answers")
except ResourceException as error:
    check(error.status_code == 500 and "does not exist" in str(error), f"after delete: {error}")
volumes = [v["volid"] for v in api.nodes(NODE).storage("local-lvm").content.get()]
check(not any(f"vm-{vmid}-" in v for v in volumes), f"disks left: {volumes}")

root.cluster.mapping.pci(MAPPING).delete()
check(all(m["id"] != MAPPING for m in root.cluster.mapping.pci.get()), "mapping not deleted")
print(f"proxmoxer_gpu_vm: VM {vmid} created, started, stopped and deleted")
