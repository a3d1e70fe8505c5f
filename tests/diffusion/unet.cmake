add_executable(test_diffusion_unet ${CMAKE_CURRENT_SOURCE_DIR}/test_unet.c)
target_link_libraries(test_diffusion_unet PRIVATE cmds_difftest cmds_warnings)
cmds_add_test(NAME diffusion.unet COMMAND test_diffusion_unet ${CMDS_FIXTURES}/diffusion_unet LABELS unit diffusion)
cmds_add_test(NAME diffusion.unet_cuda COMMAND test_diffusion_unet ${CMDS_FIXTURES}/diffusion_unet --cuda LABELS cuda diffusion)
