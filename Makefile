# hotmem: thin entry points; the logic lives in cargo and in the qemu/ host crate.
#
#   make deps     install QEMU >= 10, llvm-objcopy, gdb-multiarch, the Rust target (idempotent)
#   make kernel   build target/hotmem.img (raw arm64 Image)
#   make run      boot it on QEMU virt (console and monitor on this terminal; Ctrl-a c)
#   make test     fmt + clippy + host unit tests + QEMU integration tests + a short stress run
#   make stress   seeded random stress with fault injection on the default and two-node topologies
#                 (SEED= STEPS= DURATION=)
#   make debug    QEMU waiting for gdb on :1234
#   make libvirt-run  the kernel as a libvirt domain (qemu/libvirt/hotmem.xml, libvirt's default
#                 PCI placement; LIBVIRT_ARGS=--bus0 puts the device on pcie.0), on this terminal
#                 through `virsh console` (Ctrl-] leaves; the domain is undefined); needs root

RAM       ?= 512M
VMEM      ?= 4G
SMP       ?= 2
CPU       ?= max
GIC       ?= 3
BOOTARGS  ?=
QEMU_EXTRA ?=
LIBVIRT_ARGS ?=
# make stress: run length per topology, optional seed and step limit; faults ride along some
# resizes (--inject).
DURATION  ?= 15m
SEED      ?=
STEPS     ?=
STRESS_ARGS = --inject --duration $(DURATION) $(if $(SEED),--seed $(SEED)) $(if $(STEPS),--steps $(STEPS))
# make test is deterministic: property tests draw from this seed (PROPTEST_RNG_SEED=<n> replays or
# explores another), the unplug test from its own fixed seed (UNPLUG_SEED=<n>), the short stress
# from --seed 1.
PROPTEST_RNG_SEED ?= 1

TARGET    := aarch64-unknown-none
ELF       := target/$(TARGET)/release/hotmem
IMAGE     := target/hotmem.img

# The machine (maxmem = RAM + VMEM, one virtio-mem device vm0, QMP on target/qmp.sock) is
# hotmem-qemu's `run`; QEMU_EXTRA goes to QEMU verbatim, last.
RUN_ARGS  = --ram $(RAM) --vmem $(VMEM) --smp $(SMP) --cpu $(CPU) --gic $(GIC) --append "$(BOOTARGS)"

.PHONY: deps kernel run libvirt-run test debug clippy fmt-check unit qemu-test bench stress stress-short

deps:
	@bash qemu/deps.sh

kernel: deps
	cargo build --release -p hotmem --bin hotmem --target $(TARGET)
	llvm-objcopy -O binary $(ELF) $(IMAGE)
	@echo "kernel image: $(IMAGE) ($$(stat -c %s $(IMAGE)) bytes)"

run: kernel
	cargo run -p hotmem-qemu --release -- run $(RUN_ARGS) -- $(QEMU_EXTRA)

libvirt-run: kernel
	cargo run -p hotmem-qemu --release -- libvirt-run --ram $(RAM) --vmem $(VMEM) $(LIBVIRT_ARGS)

debug: kernel
	@echo "In another terminal: gdb-multiarch $(ELF) -ex 'target remote :1234'"
	cargo run -p hotmem-qemu --release -- run --debug $(RUN_ARGS) -- $(QEMU_EXTRA)

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p hotmem -p hotmem-arch -p hotmem-drivers --target $(TARGET) -- -D warnings

unit:
	PROPTEST_RNG_SEED=$(PROPTEST_RNG_SEED) cargo test --workspace --exclude hotmem-qemu

qemu-test: kernel
	cargo test -p hotmem-qemu

test: kernel fmt-check clippy unit qemu-test stress-short

stress: kernel
	cargo run -p hotmem-qemu --release -- stress --topology default $(STRESS_ARGS)
	cargo run -p hotmem-qemu --release -- stress --topology two-node $(STRESS_ARGS)

# Part of make test: a fixed seed and a fixed number of steps on the default topology (about a
# minute here). The duration is only an outer bound for a very slow host: it ends the run early,
# it does not fail it.
stress-short: kernel
	cargo run -p hotmem-qemu --release -- stress --topology default --seed 1 --steps 300 --duration 6m

# hotmem beside Debian's arm64 Linux on the same machine (fetched with apt into target/linux,
# no root; offline it prints hotmem's column alone): the table and target/bench/bench.json,
# then a short seeded stress run for the requested-versus-plugged plot target/bench/stress.svg.
# RUNS / LINUX_RUNS: fresh boots per scenario (5 / 3); the bench prints its time budget first.
bench: kernel
	cargo run -p hotmem-qemu --release -- bench $(if $(RUNS),--runs $(RUNS)) $(if $(LINUX_RUNS),--linux-runs $(LINUX_RUNS))
	cargo run -p hotmem-qemu --release -- stress --topology default --seed 7 --steps 150 --duration 2m --plot target/bench/stress.svg
