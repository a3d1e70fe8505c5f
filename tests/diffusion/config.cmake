add_executable(test_diffusion_config ${CMAKE_CURRENT_SOURCE_DIR}/test_config.c)
target_link_libraries(test_diffusion_config PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings)
cmds_add_test(NAME diffusion.config COMMAND test_diffusion_config ${CMDS_FIXTURES}/diffusion_config LABELS unit diffusion)
