# sd: the augment stage's Stable Diffusion pieces (kernels/diffusion/sd_lora, img2img) against
# diffusers + peft (gen_diffusion_sd.py: tiny random SD 2.1-like checkpoint, recorded draws).
add_executable(test_sd_img2img ${CMAKE_CURRENT_LIST_DIR}/test_sd_img2img.c)
target_link_libraries(test_sd_img2img PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings m)
cmds_add_test(NAME diffusion.sd_img2img COMMAND test_sd_img2img ${CMDS_FIXTURES}/diffusion_sd LABELS unit diffusion)
add_executable(test_sd_lora ${CMAKE_CURRENT_LIST_DIR}/test_sd_lora.c)
target_link_libraries(test_sd_lora PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings m)
cmds_add_test(NAME diffusion.sd_lora COMMAND test_sd_lora ${CMDS_FIXTURES}/diffusion_sd LABELS unit diffusion)
