# sd: the augment stage's Stable Diffusion pieces (kernels/diffusion/sd_lora, img2img) against
# diffusers + peft (gen_diffusion_sd.py: tiny random SD 2.1-like checkpoint, recorded draws).
add_executable(test_sd_img2img ${CMAKE_CURRENT_LIST_DIR}/test_sd_img2img.c)
target_link_libraries(test_sd_img2img PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.sd_img2img COMMAND test_sd_img2img ${CMDS_FIXTURES}/diffusion_sd LABELS unit diffusion)
# the same on the GPU (cmds-augment --device cuda), and against the CPU path (skips without one)
cmds_add_test(NAME diffusion.sd_img2img_cuda COMMAND test_sd_img2img ${CMDS_FIXTURES}/diffusion_sd --cuda
              LABELS cuda diffusion)
add_executable(test_sd_lora ${CMAKE_CURRENT_LIST_DIR}/test_sd_lora.c)
target_link_libraries(test_sd_lora PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.sd_lora COMMAND test_sd_lora ${CMDS_FIXTURES}/diffusion_sd LABELS unit diffusion)
cmds_add_test(NAME diffusion.sd_lora_cuda COMMAND test_sd_lora ${CMDS_FIXTURES}/diffusion_sd --cuda LABELS cuda diffusion)
# benchmark (label bench, not in the default run): full-size SD 2.1 (random weights made once by
# make_full_sd.py into the build folder): seconds per LoRA training step at 512 and per img2img
# image (50 DDIM steps x strength 0.3, guidance 7.5), ours vs diffusers + peft on the same machine.
add_executable(bench_sd ${CMAKE_CURRENT_LIST_DIR}/bench_sd.c)
target_link_libraries(bench_sd PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.bench_sd_cpu COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_sd.sh
              $<TARGET_FILE:bench_sd> ${CMAKE_BINARY_DIR}/full_sd cpu 512 3 50 0.3 LABELS bench diffusion TIMEOUT 7200)
cmds_add_test(NAME diffusion.bench_sd_cuda COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_sd.sh
              $<TARGET_FILE:bench_sd> ${CMAKE_BINARY_DIR}/full_sd cuda 512 10 50 0.3 LABELS bench diffusion cuda TIMEOUT 3600)
