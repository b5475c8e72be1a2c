# imagesmith: the A/B boot counter (RAUC's U-Boot contract). The state is kept in two
# copies on partition @BOOT@ (uboot.env and uboot-redund.env, U-Boot's redundant
# environment format: CRC-32, a counter byte, the variables), as fw_setenv writes them.
setenv part_boot @BOOT@
setenv part_A @PART_A@
setenv part_B @PART_B@
setenv root_A @ROOT_A@
setenv root_B @ROOT_B@
setexpr copy_1 ${pxefile_addr_r} + 0
setexpr copy_2 ${pxefile_addr_r} + 0x10000
setexpr packed ${pxefile_addr_r} + 0x20000
setexpr exported ${pxefile_addr_r} + 0x30000
# a copy's variables, when its CRC holds (the copy at ${at}, without its counter byte)
setenv read_copy 'cp.b ${at} ${packed} 4; setexpr from ${at} + 5; setexpr to ${packed} + 4; cp.b ${from} ${to} 0x3ffb; env import -c ${packed} 0x3fff BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT'
# the state before a first boot, or with both copies damaged
setenv BOOT_ORDER 'A B'
setenv BOOT_A_LEFT @ATTEMPTS@
setenv BOOT_B_LEFT @ATTEMPTS@
setenv have_1 0; setenv have_2 0; setenv counter_1 0; setenv counter_2 0
if load ${devtype} ${devnum}:${part_boot} ${copy_1} uboot.env; then setenv have_1 1; setexpr at ${copy_1} + 4; setexpr.b counter_1 *${at}; fi
if load ${devtype} ${devnum}:${part_boot} ${copy_2} uboot-redund.env; then setenv have_2 1; setexpr at ${copy_2} + 4; setexpr.b counter_2 *${at}; fi
# which copy is newer, as U-Boot and libubootenv decide it (the counter wraps after ff)
setenv newer 1
if test ${have_1} = 0; then setenv newer 2; fi
if test ${have_1} = 1 && test ${have_2} = 1; then
  if itest ${counter_1} == ${counter_2}; then setenv newer 1;
  elif itest ${counter_1} == ff && itest ${counter_2} == 0; then setenv newer 2;
  elif itest ${counter_2} == ff && itest ${counter_1} == 0; then setenv newer 1;
  elif itest ${counter_1} -gt ${counter_2}; then setenv newer 1;
  else setenv newer 2; fi
fi
# the older copy first, the newer over it: a damaged newer copy leaves the older's state
if test ${newer} = 1; then setenv read_order '2 1'; else setenv read_order '1 2'; fi
setenv valid none
for copy in ${read_order}; do
  if test ${copy} = 1 && test ${have_1} = 1; then setenv at ${copy_1}; if run read_copy; then setenv valid 1; fi; fi
  if test ${copy} = 2 && test ${have_2} = 1; then setenv at ${copy_2}; if run read_copy; then setenv valid 2; fi; fi
done
# the next write goes to the other copy, its counter one higher
if test ${valid} = 1; then setenv write_file uboot-redund.env; setenv base ${counter_1};
elif test ${valid} = 2; then setenv write_file uboot.env; setenv base ${counter_2};
else setenv write_file uboot.env; setenv base 0; echo 'imagesmith-boot: no valid boot state: starting from slot A'; fi
setexpr next_counter ${base} + 1
setenv save_state 'env export -c -s 0x3fff ${exported} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; cp.b ${exported} ${packed} 4; setexpr at ${packed} + 4; mw.b ${at} ${next_counter}; setexpr from ${exported} + 4; setexpr to ${packed} + 5; cp.b ${from} ${to} 0x3ffb; fatwrite ${devtype} ${devnum}:${part_boot} ${packed} ${write_file} 0x4000'
# the first slot in the order with attempts left; one attempt is taken
setenv slot
for s in ${BOOT_ORDER}; do
  if test -z "${slot}"; then
    if test ${s} = A && itest 0x${BOOT_A_LEFT} -gt 0; then setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1; setenv slot A; fi
    if test ${s} = B && itest 0x${BOOT_B_LEFT} -gt 0; then setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1; setenv slot B; fi
  fi
done
if test -z "${slot}"; then
  echo 'imagesmith-boot: no slot has attempts left: both get theirs back, then a reset'
  setenv BOOT_A_LEFT @ATTEMPTS@; setenv BOOT_B_LEFT @ATTEMPTS@; run save_state; reset
fi
run save_state
echo "imagesmith-boot: slot ${slot} (order ${BOOT_ORDER}, attempts left A ${BOOT_A_LEFT} B ${BOOT_B_LEFT})"
if test ${slot} = A; then setenv part ${part_A}; setenv root ${root_A}; else setenv part ${part_B}; setenv root ${root_B}; fi
setenv bootargs "@ARGS@ root=${root} rauc.slot=${slot}"
# the device tree U-Boot runs with (the firmware's or qemu's), in U-Boot's own memory,
# which no load below can overwrite
setenv fdt ${fdtcontroladdr}
setexpr initrd_addr ${kernel_addr_r} + 0x6000000
# a compressed kernel is unpacked from here
if test -z "${kernel_comp_addr_r}"; then setexpr kernel_comp_addr_r ${kernel_addr_r} + 0xa000000; setenv kernel_comp_size 0x6000000; fi
# the slot's own kernel and initramfs; the kernel may load over this script, so what
# follows the loads runs from the environment
setenv boot_slot 'if load ${devtype} ${devnum}:${part} ${kernel_addr_r} /boot/vmlinuz && load ${devtype} ${devnum}:${part} ${initrd_addr} /boot/initrd.img; then booti ${kernel_addr_r} ${initrd_addr}:${filesize} ${fdt}; fi; echo imagesmith-boot: slot ${slot} did not boot: a reset; reset'
run boot_slot
