add_executable(test_diffusion_clip ${CMAKE_CURRENT_SOURCE_DIR}/test_clip.c)
target_link_libraries(test_diffusion_clip PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings)
cmds_add_test(NAME diffusion.clip COMMAND test_diffusion_clip ${CMDS_FIXTURES}/diffusion_clip LABELS unit diffusion)
