add_executable(test_diffusion_unet_lora ${CMAKE_CURRENT_SOURCE_DIR}/test_unet_lora.c)
target_link_libraries(test_diffusion_unet_lora PRIVATE cmds_difftest cmds_warnings)
cmds_add_test(NAME diffusion.unet_lora COMMAND test_diffusion_unet_lora ${CMDS_FIXTURES}/diffusion_unet_lora LABELS unit diffusion)
cmds_add_test(NAME diffusion.unet_lora_cuda COMMAND test_diffusion_unet_lora ${CMDS_FIXTURES}/diffusion_unet_lora --cuda LABELS cuda diffusion)
